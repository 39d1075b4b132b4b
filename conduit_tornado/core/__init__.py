"""What every layer may use.

Settings, the error envelope, time, ids, key material and the admin request bodies.
"""
