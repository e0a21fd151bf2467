"""``executor="ray"``: tasks run as Ray remote tasks on a local 2-CPU instance (loopback only).

Ray starts slowly, so one module-scoped instance serves the few tests here.
"""

from __future__ import annotations

import os

import pytest

from ragloom import TaskFetchingUnit, Tool, ToolRegistry, parse_plan

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_instance():
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # another fixture started one: share it, leave it running
        yield ray
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def make_registry() -> ToolRegistry:
    # defined here, not at module level, so Ray pickles them by value (workers cannot
    # import the test module)
    def pid() -> int:
        """The worker's process id."""
        import os as _os

        return _os.getpid()

    async def double(x: int) -> int:
        """Twice x, asynchronously."""
        return 2 * x

    def fail(x: int) -> int:
        """Always fails."""
        raise KeyError(f"no {x}")

    def snooze() -> None:
        """Sleeps past its timeout."""
        import time

        time.sleep(30)

    return ToolRegistry(
        [
            pid,
            double,
            fail,
            Tool.from_function(lambda a, b: a + b, name="add"),
            Tool.from_function(snooze, timeout=1.0),
        ]
    )


async def test_ray_runs_tasks_remotely_with_dependencies(ray_instance) -> None:
    registry = make_registry()
    plan = parse_plan(
        "1. pid()\n2. double(21)\n3. add($2, 1)\n4. fail(3)\n5. double($4)\n6. snooze()\n7. join()",
        registry,
    )
    out = await TaskFetchingUnit(registry, executor="ray", default_timeout=60).run(plan)
    assert out[1].ok and out[1].value != os.getpid()  # ran in a Ray worker process
    assert out[2].value == 42 and out[3].value == 43
    assert out[4].error == "KeyError: 'no 3'"
    assert out[5].error.startswith("dependency $4 failed")
    assert out[6].error == "tool 'snooze': timed out after 1 s" and out[7].ok
