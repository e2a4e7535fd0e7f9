"""Processes: the supervisor, its workers, and the admin listener beside them.

``bastion run`` is a supervisor that binds the listeners and forks worker processes; each
worker runs one event loop (``bastion.engine``) serving the application. The supervisor
never imports the application, restarts workers that die or hang, reloads on SIGHUP, and
serves the admin listener (``bastion.observe``) with the whole server's figures.
"""
