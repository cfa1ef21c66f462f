"""What the sensor, the uploader and the collector all run on: the
configuration files (shellvars, config), command-line options, daemons
(daemon, capabilities), logs, the daemons' state files and `status`, the
clock.
"""
