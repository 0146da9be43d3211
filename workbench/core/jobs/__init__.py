"""Jobs: the plugin API's base classes, parameters, events, plugin registry and the runner."""

from workbench.core.jobs.base import Job, JobContext
from workbench.core.jobs.events import EventBus, JobEvent
from workbench.core.jobs.params import Param
from workbench.core.jobs.registry import PluginInfo, Registry, registry

__all__ = ["EventBus", "Job", "JobContext", "JobEvent", "Param", "PluginInfo", "Registry", "registry"]
