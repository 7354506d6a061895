"""The training loop's console progress bar (rich): one bar per epoch, the running loss beside it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def epoch_progress(enabled: bool, total_epochs: int) -> Iterator[Callable[..., None] | None]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        transient=False,
    ) as prog:
        task = prog.add_task("train", total=None, info="")

        def update(epoch: int, done: int, total: int, info: str = "") -> None:
            prog.update(task, description=f"epoch {epoch + 1}/{total_epochs}", completed=done, total=total, info=info)

        yield update
