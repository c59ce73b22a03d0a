"""The pusher: sends push notifications for offline recipients (stream PUSH).

See docs/push.md. ``service.py`` runs it; ``worker.py`` decides ack / retry /
dead-letter per entry; ``providers/`` talk to APNs, FCM, Web Push (or log).
"""
