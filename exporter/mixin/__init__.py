"""The monitoring mixin: Prometheus rules, alerts and Grafana dashboards generated from one set
of site settings (:class:`exporter.mixin.settings.Settings`)."""
