"""trinity_process_model."""
