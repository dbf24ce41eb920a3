"""The engine: runs one flow run (`flow_run`) or one task run (`task_run`) through
its states. `calls` turns task calls into task-run calls for a runner."""
