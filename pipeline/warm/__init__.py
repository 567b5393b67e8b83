"""Warm start: a per-user server that holds torch, Lightning and MLflow imported and forks a fresh
child per `python -m pipeline.train` call (server), and the client side the CLI uses (client).

    python -m pipeline.warm status|start [--wait]|stop
"""
