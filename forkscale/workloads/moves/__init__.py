"""Day-2 moves as persisted operations (forkscale.workloads.operations): `promote` (linked -> full in
place), `rebalance` (spread a pool over its datastores and hosts, vacate removed ones) and
`evacuate` (empty a host for maintenance). Their kinds are registered with the others in
`forkscale.workloads.operations.registry`.
"""
