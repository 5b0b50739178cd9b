"""The routes' dependencies are coroutines: FastAPI runs a plain-function dependency in its
thread pool, a hop per request (~0.7 ms on /health here) for a function that never waits."""

import inspect
from typing import get_args

from gateway import deps


def test_every_dependency_runs_on_the_event_loop() -> None:
    offered = [value for value in vars(deps).values() if get_args(value)[1:]]
    assert len(offered) == 3  # RuntimeDep, Sessions, Owner
    for annotated in offered:
        depends = get_args(annotated)[1]
        assert inspect.iscoroutinefunction(depends.dependency), depends.dependency
