from trinity_platform.alembic_env import run
from trinity_work.infrastructure.tables import metadata

run(metadata)
