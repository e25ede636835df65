"""The failover and failback workflows' steps (statemachines/*.asl.json), one module each.

The workflow runs in the region that takes the writes. Steps pass typed documents
(models): the plan, the fence, the catch-up proof, the promotion, the routing flip,
and the report built from them. `dispatch.run_step` is the steps function's entry.
"""
