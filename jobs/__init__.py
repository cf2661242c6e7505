"""Worker side of Taskrelay: task types, the RQ entry point, the worker process.

Nothing in this package imports Flask or pika, so RQ workers stay lean and task
functions can be imported by dotted path.
"""
