"""Request counts and latency histograms per route, served at GET /metrics in Prometheus' text format."""
from __future__ import annotations

import threading
from collections import defaultdict


class Metrics:
    """Request counts and latency histograms per route, in Prometheus' text format."""
    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = defaultdict(int)  # (route, status) -> n
        self.hist = defaultdict(lambda: [0] * (len(self.BUCKETS) + 1))  # route -> bucket counts (+Inf)
        self.total = defaultdict(float)

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(route, status)] += 1
            i = next((j for j, b in enumerate(self.BUCKETS) if seconds <= b), len(self.BUCKETS))
            self.hist[route][i] += 1
            self.total[route] += seconds

    def text(self, per_tenant: dict[str, dict[str, float]], requests: bool = True) -> str:
        """The metrics; `per_tenant`: gauge name -> tenant -> value; `requests`: with the request counters."""
        lines = []
        if requests:
            lines.append("# TYPE huaxiang_requests_total counter")
            with self.lock:
                for (route, status), n in sorted(self.requests.items()):
                    lines.append(f'huaxiang_requests_total{{route="{route}",status="{status}"}} {n}')
                lines.append("# TYPE huaxiang_request_seconds histogram")
                for route, counts in sorted(self.hist.items()):
                    cum = 0
                    for b, c in zip([*map(str, self.BUCKETS), "+Inf"], counts):
                        cum += c
                        lines.append(f'huaxiang_request_seconds_bucket{{route="{route}",le="{b}"}} {cum}')
                    lines.append(f'huaxiang_request_seconds_sum{{route="{route}"}} {self.total[route]:.6f}')
                    lines.append(f'huaxiang_request_seconds_count{{route="{route}"}} {cum}')
        for name, values in per_tenant.items():
            lines.append(f"# TYPE huaxiang_{name} gauge")
            lines += [f'huaxiang_{name}{{tenant="{_label(t)}"}} {v}' for t, v in sorted(values.items())]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    """A Prometheus label value: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
