"""The grader's plugins, in data-flow order: configure -> discover -> isolate and run -> compare -> grade -> report
(the list, with the reason for each place, is ``plugins.GRADER_PLUGINS``)."""

from plugins import GRADER_PLUGINS

pytest_plugins = GRADER_PLUGINS
