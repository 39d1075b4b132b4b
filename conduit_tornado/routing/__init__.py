"""From a virtual model to a provider's answer.

The catalog, the router, fan-out, provider adapters and the upstream calls.
"""
