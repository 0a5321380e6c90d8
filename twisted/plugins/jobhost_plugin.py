"""twistd plugin: ``twistd -n jobhost --config etc/jobhost.toml``.

Discovery imports only this file, so it names ``jobhost.tap`` by string and
imports nothing heavy (importing the wrong thing here could install a reactor).
"""

from twisted.application.service import ServiceMaker

jobhost = ServiceMaker(
    "jobhost",
    "jobhost.tap",
    "Custom domains with automatic HTTPS: ACME certificates per hostname, served by SNI.",
    "jobhost",
)
