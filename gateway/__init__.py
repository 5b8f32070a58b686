"""dify-gateway: serves the model invocations of Dify's plugin daemon."""

__version__ = "0.1.0"
