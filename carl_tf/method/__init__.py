"""The method: CARL's objective, schedule, networks, views and the `CARL` model.

It imports nothing of carl_tf's data, run machinery, evaluation or command line.
"""
