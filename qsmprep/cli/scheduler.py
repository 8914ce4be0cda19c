"""Nipype's MultiProc scheduler, woken when a node finishes instead of at its next poll.

Nipype's scheduler loop (``DistributedPluginBase.run``) collects finished nodes, submits the
nodes that became ready, then sleeps until the next poll (``poll_sleep_duration``, 0.2 s here:
:data:`qsmprep.config.MULTIPROC_POLL_S`). A node that finishes is noticed up to one poll late,
and each level of plumbing that runs in the scheduler's own process (``Merge``,
``IdentityInterface`` and the other ``run_without_submitting`` nodes) makes its successors wait
for the next poll: in the 2-session subject's tail, the 29 nodes between the last label
resampling and the report started 0.2 s apart (6.8 s for a few milliseconds of work each).

:class:`MultiProcPlugin` is Nipype's plugin with a wake-up event: the worker pool's completion
callback and every finished node set it, and the loop's sleep returns as soon as it is set.
Which node runs, with which resources and in which order is unchanged; only the idle time
between a node's end and the next scheduler pass goes. With nothing finishing, the loop still
passes every poll, as before. Batch plugins (SLURM) are not affected: their poll is a ``squeue``
call.
"""

from __future__ import annotations

import gc
import threading

from nipype.pipeline.plugins import base as _plugin_base
from nipype.pipeline.plugins.multiproc import MultiProcPlugin as _NipypeMultiProcPlugin

_SWAP_LOCK = threading.Lock()


class MultiProcPlugin(_NipypeMultiProcPlugin):
    """Nipype's ``MultiProc`` plugin whose loop wakes when a node finishes.

    Named like Nipype's class so that Nipype records the plugin as ``MultiProc`` (it derives
    the name from the class name). Use it through :func:`plugin_settings`.
    """

    def __init__(self, plugin_args=None):
        super().__init__(plugin_args=plugin_args)
        self._wake = threading.Event()
        self.wakeups = 0  # loop sleeps cut short by a finished node (for tests and debugging)

    def _async_callback(self, args):  # a worker's node finished (pool's callback thread)
        try:
            super()._async_callback(args)
        finally:
            self._wake.set()

    def _task_finished_cb(self, jobid, cached=False):  # its successors may be ready now
        super()._task_finished_cb(jobid, cached=cached)
        self._wake.set()

    def _sleep(self, seconds):
        if seconds > 0 and self._wake.wait(seconds):
            self.wakeups += 1
        self._wake.clear()

    def run(self, graph, config, updatehash=False):
        # the execution graph was just built from the workflow (after cli.run's gc.freeze):
        # freeze it too, so that Nipype's gc.collect() on every pass (more passes now) scans
        # only new objects; unfrozen when the run ends, as cli.run does
        gc.freeze()
        with _SWAP_LOCK:
            saved = _plugin_base.sleep
            _plugin_base.sleep = self._sleep  # the loop's only sleep (base.run)
        try:
            return super().run(graph, config, updatehash=updatehash)
        finally:
            with _SWAP_LOCK:
                _plugin_base.sleep = saved
            gc.unfreeze()


def plugin_settings(settings: dict) -> dict:
    """``workflow.run`` arguments with ``MultiProc`` replaced by :class:`MultiProcPlugin`.

    Parameters
    ----------
    settings : dict
        :meth:`qsmprep.config.RunConfig.plugin_settings` (``plugin``, ``plugin_args``).

    Returns
    -------
    dict
        ``{"plugin": MultiProcPlugin(plugin_args)}`` for MultiProc; ``settings`` otherwise.
    """
    if settings.get("plugin") != "MultiProc":
        return settings
    return {"plugin": MultiProcPlugin(plugin_args=dict(settings.get("plugin_args") or {}))}
