"""``tidings_schema_violations_total{topic, boundary}``: a Prometheus collector of the
violations a :class:`~tidings.contracts.Validator` counted (needs ``prometheus-client``,
the ``prometheus`` extra).

The counts are the validator's own (:attr:`Validator.violations`), read at each scrape, so
registering the collector costs the checks nothing. The gateway registers one for its
validator; a process validating with ``Bus(validator=...)`` registers one itself::

    from prometheus_client import REGISTRY
    REGISTRY.register(ViolationsCollector(validator))
"""

from __future__ import annotations

from collections.abc import Iterator

try:
    from prometheus_client.core import CounterMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tidings.contracts.metrics needs prometheus-client: install it with pip install 'tidings[prometheus]'"
    ) from exc

from tidings.contracts.validation import Validator

__all__ = ("ViolationsCollector",)


class ViolationsCollector(Collector):
    """Exports ``validator``'s violation counts (none while ``validator`` is ``None``)."""

    def __init__(self, validator: Validator | None) -> None:
        self.validator = validator

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "tidings_schema_violations",
            "Events refused for breaking their topic's registered schema",
            labels=["topic", "boundary"],
        )
        if self.validator is not None:
            for (topic, boundary), count in sorted(self.validator.violations.items()):
                family.add_metric([topic, boundary], count)
        yield family
