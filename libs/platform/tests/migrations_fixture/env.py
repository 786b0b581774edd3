from sqlalchemy import Column, Integer, MetaData, String, Table

from trinity_platform.alembic_env import run
from trinity_platform.db import platform_tables

metadata = MetaData()
platform_tables(metadata)
Table("widgets", metadata, Column("id", Integer, primary_key=True), Column("name", String(50)))

run(metadata)
