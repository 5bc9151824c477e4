"""`edgeguard web`: an optional local web page for the appliance (issue 9).

A separate process from the daemon, which keeps its no-network sandbox: a signed-in user
drops photos into the inbox through the browser, follows them, views and downloads the
redacted results from the outbox, and sees the daemon's counts from its state file.

Modules: :mod:`~edgeguard.web.auth` (hashed password, attempt limits, sessions),
:mod:`~edgeguard.web.uploads` (checks, streaming into the inbox, following uploads),
:mod:`~edgeguard.web.results` (the outbox, read-only), :mod:`~edgeguard.web.status`
(the state file), :mod:`~edgeguard.web.app` (the aiohttp routes) with
:mod:`~edgeguard.web.context`, :mod:`~edgeguard.web.guards`, :mod:`~edgeguard.web.signin`,
:mod:`~edgeguard.web.pages` and :mod:`~edgeguard.web.streaming` (its parts), and
:mod:`~edgeguard.web.server` (start-up checks and the serving loop). aiohttp comes with
the ``web`` extra and is imported only by the app, its parts and the server; nothing is
imported here.
"""
