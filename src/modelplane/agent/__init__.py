"""The node agent: the one modelplane process that runs on every node of the pool.

It keeps its node alive in the control plane (heartbeats through the API), runs the node's share
of the peer-memory checkpoint tier (a bounded, non-persistent redis-server whose URL it publishes
on the node), and turns a cloud's spot interruption notice into a drain, so that the job controller
checkpoints and moves the node's training jobs before the machine goes away.

It talks to the control plane only through the API (as a kubelet does), never to the database.
"""
