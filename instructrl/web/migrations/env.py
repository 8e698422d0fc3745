"""Alembic environment: the engine comes from `instructrl db upgrade` (config attribute)."""

from alembic import context

from instructrl.web.models import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
