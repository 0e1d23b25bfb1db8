"""Keep Faust from dropping records at the end of a rebalance.

At the end of table recovery Faust resumes the stream partitions and seeks them to their
committed offsets, and only then resumes flow control; resuming flow control empties every
stream queue. Records fetched in between are thrown away although the fetch position has
moved past them, and later acknowledgements commit over the hole. Measured here: a replay of
3,000 canonical events lost 1 to 23 of them in about one restart out of four.

Holding flow control from the moment recovery completes until Faust resumes it keeps those
records in the consumer (delivery waits on flow control) instead of in a queue that is about to
be cleared, so nothing is fetched and then discarded.
"""

from __future__ import annotations

from typing import Any

import faust
from mode import BaseSignalT


def hold_flow_until_streams_resume(app: faust.App) -> None:
    async def hold(sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any) -> None:
        # Sent just before the stream partitions are resumed; Faust resumes flow afterwards.
        app.flow_control.suspend()

    app.on_rebalance_complete.connect(hold)
