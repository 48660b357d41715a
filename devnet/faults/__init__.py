"""The fault-injection kit: break a running devnet on purpose, then check that it stayed
safe and came back.

- `scenario`: the TOML scenario format (network, load, timeline, checks) and its parser;
- `history`: what the load generator and the observers recorded (client operations,
  status samples, key-pool samples), as plain data;
- `checkers`: pure functions from recorded data to a verdict (agreement, app hashes,
  lost acknowledged writes, liveness after heal, key reuse, equivocation, starvation);
- `backends`: how a perturbation reaches the network (process signals, the node admin
  API, the key manager admin API, Docker);
- `actions`: the perturbations themselves (kill, partition, delay, keys, twin, ...);
- `load`: the open-loop transaction generator;
- `runner`: runs a scenario end to end and writes the report;
- `cli`: `qchain fault run|kill|restart|...`.

See `devnet/faults/README.md` for the scenario format and what each check observes.
"""
