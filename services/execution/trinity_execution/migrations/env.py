from trinity_execution.infrastructure.tables import metadata
from trinity_platform.alembic_env import run

run(metadata)
