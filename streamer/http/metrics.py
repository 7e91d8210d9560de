"""Counters an operator needs, rendered in the Prometheus text format (version 0.0.4)."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Iterable[str], values: Iterable[object]) -> str:
    pairs = ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values))
    return "{" + pairs + "}" if pairs else ""


# Upper bounds (seconds) of the buckets of how long a listener's HLS segment request waited for
# its segment: the first segment of a track is asked for when play is pressed (a second is long),
# each next one about a segment's length (2-6 s) before it plays.
SEGMENT_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Plain integers updated on the event loop; no locks needed, no cost beyond an add."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()  # (route, method, status)
        self.bytes_sent = 0
        self.active_streams = 0
        self.client_aborts = 0
        self.unreplicated_writes = 0  # writes sync_replicas followers did not hold in time
        self.lane_answers = 0  # answers the fast lane sent itself (streamer.delivery.lane)
        self.lane_handoffs = 0  # connections it handed to aiohttp
        self.segment_waits = [0] * (len(SEGMENT_WAIT_BUCKETS) + 1)  # per bucket, the last one +Inf
        self.segment_wait_seconds = 0.0

    def segment_waited(self, seconds: float) -> None:
        """An HLS segment request waited `seconds` for its segment (made, or found in the cache)."""
        self.segment_waits[bisect.bisect_left(SEGMENT_WAIT_BUCKETS, seconds)] += 1
        self.segment_wait_seconds += seconds

    def count_request(self, route: str, method: str, status: int) -> None:
        self.requests[(route, method, status)] += 1

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        """`gauges` adds name -> (help, value) samples computed by the caller at scrape time."""
        out = ["# HELP streamer_http_requests_total HTTP requests answered, by route and status.",
               "# TYPE streamer_http_requests_total counter"]
        for (route, method, status), n in sorted(self.requests.items()):
            out.append("streamer_http_requests_total"
                       f"{_labels(('route', 'method', 'status'), (route, method, status))} {n}")
        for name, kind, help_text, value in (
            ("streamer_http_sent_bytes_total", "counter", "Body bytes sent.", self.bytes_sent),
            ("streamer_active_streams", "gauge", "Media responses being sent now.", self.active_streams),
            ("streamer_client_aborts_total", "counter", "Responses cut short because the client left.",
             self.client_aborts),
            ("streamer_unreplicated_writes_total", "counter", "Writes that fewer than sync_replicas followers "
             "held within sync_wait_ms.", self.unreplicated_writes),
            ("streamer_fast_lane_answers_total", "counter", "Plain reads of originals and of warm HLS segments answered by the fast lane.",
             self.lane_answers),
            ("streamer_fast_lane_handoffs_total", "counter", "Connections the fast lane handed to the full "
             "request path (their first request that was not a plain read of an original).", self.lane_handoffs),
        ):
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        out += self._segment_wait_histogram()
        for name, (help_text, value) in gauges.items():
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_number(value)}"]
        return "\n".join(out) + "\n"


    def _segment_wait_histogram(self) -> list[str]:
        name = "streamer_hls_segment_wait_seconds"
        out = [f"# HELP {name} How long HLS segment requests waited for their segment (made by ffmpeg, or from "
               "the cache).", f"# TYPE {name} histogram"]
        total = 0
        for bound, count in zip((*SEGMENT_WAIT_BUCKETS, "+Inf"), self.segment_waits):
            total += count
            out.append(f'{name}_bucket{{le="{bound}"}} {total}')
        return out + [f"{name}_sum {_number(round(self.segment_wait_seconds, 6))}", f"{name}_count {total}"]


def _number(value: float) -> str:
    """Exact: byte counts in the millions must not come out as 3.81886e+06."""
    if isinstance(value, int):  # bool too
        return str(int(value))
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
