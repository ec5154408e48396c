"""The HTTP side: listeners, basic auth and TLS, the streamed /metrics page, the /-/
lifecycle endpoints, the JSON API and the status board."""
