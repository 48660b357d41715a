"""The fault-injection kit: break a running devnet on purpose, then check that it stayed
safe and came back.

- `scenario`: the TOML scenario format (network, load, timeline, checks) and its parser;
- `history`: what the load generator and the observers recorded (client operations,
  status samples, key-pool samples), as plain data;
- `checkers`: pure functions from recorded data to a verdict (agreement, app hashes,
  lost acknowledged writes, liveness after heal, key reuse, equivocation, starvation);
- `transport`, `keys`, `twins`, `disk`: the perturbations, plain functions over a
  `devnet.running.Network` (node admin API rules, key manager admin APIs, Byzantine
  modes and twin processes, LevelDB bit flips);
- `actions`: the timeline's table of perturbations (action -> apply, undo) and node
  selectors;
- `attacker`: an unauthenticated outsider on the P2P ports;
- `load`: the open-loop transaction generator;
- `runner`: runs a scenario end to end, in phases: bootstrap, load (`observer`),
  timeline and heal (`timeline`), check (`judge`), report (`report`);
- `cli`: `qchain fault run|kill|restart|...`.

See `devnet/faults/README.md` for the scenario format and what each check observes.
"""
