"""The delivery worker: plan events into deliveries, claim them with leases, deliver them
in per-resource order, and keep the durable retry schedule.

planner.py -> claims.py -> delivery.py (ordering.py, schedule.py) -> runner.py;
retention.py and replay.py are the operator's tools.
"""
