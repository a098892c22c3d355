from bastion.db.database import Database
from bastion.db.tables import Base

__all__ = ["Base", "Database"]
