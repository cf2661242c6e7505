"""The RabbitMQ side of Taskrelay: the wire envelope, the AMQP topology, publisher and consumer, and the bridge.

pika lives only in `bridge.amqp`. The bridge process (`python -m bridge`,
`bridge.service`) imports `core/` and this package, never `app/` or `jobs/`;
the API may use the envelope and the publisher, never the bridge process.
"""
