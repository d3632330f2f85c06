"""Storage adapters of the cores' store interfaces (the cores import no database)."""
