"""Who may make a request, and how many.

Keys, groups, rate limits, parallel slots, budgets and realtime session secrets.
"""
