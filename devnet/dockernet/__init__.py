"""The devnet under Docker Compose: the key manager and N validators as containers of one
image (`qchain:dev`, built by `devnet/docker/build.sh`), on a private compose network.

`qchain devnet init --docker` writes the same files as a local devnet, flavoured for
containers, plus the compose file:

    DIR/
      network.json, genesis.json, accounts/, nodes/nodeI/, kms/, ca/   (as `init`)
      docker.json           compose project, host base port, image
      docker-compose.yml    kms + node0..nodeN-1

Inside the network, services reach each other by name: a validator listens on
0.0.0.0:7000 (P2P), :8000 (API) and :9000 (admin), its peers are `nodeJ:7000`, the key
manager is `https://kms:6000` (its TLS certificate names `kms`, `localhost` and
127.0.0.1). DIR is mounted read-only at /devnet in every container; each validator keeps
its chain in a named volume mounted at /var/lib/qchain. With `--kme-per-node` the single
`kms` service is replaced by one `kme-nodeI` service per validator (ETSI API on 6000,
relay on 6002, reached by name on the compose network; not published on the host), and
node I asks `https://kme-nodeI:6000`. Ports are published on 127.0.0.1
only: the key manager on BASE, node I's API on BASE+100+I and its admin API on BASE+200+I
(BASE = 28000 by default, so a local devnet on 27000 can run beside it). The key manager's
admin endpoint binds to the container's loopback only (the key manager insists), so it is
reached with `docker exec`, not from the host.

The containers run as uid 10001, so `init --docker` makes the devnet's key files readable
by others: these are the published, insecure dev keys.

The package, from data to effects:

- `plan`: the network as seen from inside the compose network, the settings (project,
  host ports, image) and the compose project as pure data (services, ports, volumes);
- `render`: the compose file's YAML text from that data (pure);
- `files`: writing a Docker devnet's directory;
- `engine`: the `docker` and `docker compose` commands;
- `network`: `ComposeNetwork`, the Docker flavour of `devnet.running.Network`;
- `cli`: the `qchain devnet ... --docker` verbs.

`python -m devnet.dockernet` prints the reference compose file kept in `devnet/docker/`.
"""
