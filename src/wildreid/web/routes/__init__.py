"""The app's routes, one router per area; ``create_app`` (app.py) includes them all."""

from wildreid.web.routes import auth, groups, individuals, photos, review, uploads

ROUTERS = [auth.router, uploads.router, review.router, groups.router, individuals.router, photos.router]
