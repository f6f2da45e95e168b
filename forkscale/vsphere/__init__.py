"""vSphere access: the async SOAP transport (wire), the task/status watcher, and the driver."""
