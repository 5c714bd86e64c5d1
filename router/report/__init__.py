"""The cost and pilot-gates report (`comfy-router report`) and the capacity plan (`report plan`).

See router/report/metrics.py for the definitions and router/report/gates.py for the verdict table.
"""
