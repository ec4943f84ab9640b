"""The app's routes, one router per area; ``create_app`` (app.py) includes them all."""

from . import auth, individuals, photos, review, uploads

ROUTERS = [auth.router, uploads.router, review.router, individuals.router, photos.router]
