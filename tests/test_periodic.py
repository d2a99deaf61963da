"""The background job runner behind the upload and voice sweepers."""

from __future__ import annotations

import asyncio

from capsearch.periodic import Periodic, sweep_interval


async def test_a_failing_run_does_not_end_the_job() -> None:
    runs = 0
    third = asyncio.Event()

    async def job() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise OSError("disk full")
        if runs == 3:
            third.set()

    periodic = Periodic("test job", 0.001, job)
    periodic.start()
    await asyncio.wait_for(third.wait(), 10)
    await periodic.stop()
    stopped_at = runs
    await asyncio.sleep(0)  # a stopped job runs no more, even after the loop turns
    assert runs == stopped_at >= 3


async def test_plain_functions_run_too() -> None:
    ran = asyncio.Event()
    periodic = Periodic("sync job", 0.001, ran.set)
    periodic.start()
    await asyncio.wait_for(ran.wait(), 10)
    await periodic.stop()


def test_interval_is_a_quarter_of_the_timeout_within_bounds() -> None:
    assert sweep_interval(60, ceiling_s=15) == 15
    assert sweep_interval(8, ceiling_s=15) == 2
    assert sweep_interval(0.01, ceiling_s=15) == 0.05
