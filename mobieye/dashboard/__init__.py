"""The fleet dashboard: an MQTT-fed store (``store``), token auth (``auth``), a JSON API
(``api``), pages (``pages``, ``page_routes``), live views through the workers (``proxy``) and
``mobieye dashboard`` (``main``, ``cli``). Import from the modules; nothing is re-exported.
"""
