"""RabbitMQ ingress: the API publishes each task to a durable queue; the bridge moves tasks into RQ.

Only `bridge.amqp` imports pika. The API uses `bridge.ingress`; the bridge
process is `python -m bridge` (`make bridge`).
"""
