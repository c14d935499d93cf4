"""OpenLineage run events for every job, so data platforms (Marquez, DataHub) see what the factory made."""
