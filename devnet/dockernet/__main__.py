"""`python -m devnet.dockernet > devnet/docker/docker-compose.yml`: the reference
compose file."""

import sys

from devnet.dockernet.render import reference_compose_yaml

sys.stdout.write(reference_compose_yaml())
