from __future__ import annotations

import asyncio
import inspect

import faust
from faust.tables.recovery import Recovery

from streams.flow import hold_flow_until_streams_resume


def test_flow_is_held_from_recovery_complete_until_faust_resumes_it() -> None:
    async def run() -> None:
        app = faust.App("flow-test", broker="kafka://127.0.0.1:1", autodiscover=False)
        hold_flow_until_streams_resume(app)
        app.flow_control.resume()
        await app.on_rebalance_complete.send()
        assert not app.flow_control.is_active()
        app.flow_control.resume()
        assert app.flow_control.is_active()

    asyncio.run(run())


def test_faust_still_resumes_flow_after_the_signal_and_the_seek() -> None:
    # The hold relies on this order in Faust's recovery; a Faust upgrade that changes it
    # must be looked at again.
    for method in (Recovery.on_recovery_completed, Recovery._resume_streams):
        src = inspect.getsource(method)
        signal = src.index("on_rebalance_complete.send()")
        seek = src.index("perform_seek()")
        resume = src.index("flow_control.resume()")
        assert signal < seek < resume, method.__name__
