"""GET /openapi.json and GET /docs: the API's description and a Swagger UI page for it.

The page's scripts, styles and icons come from the openapi-ui-bundles package and are served by the app
itself under /docs/static/, so the page works offline and loads nothing from a CDN.
"""

from __future__ import annotations

from aiohttp import web
from openapi_ui_bundles import swagger_ui

from atelier_api import openapi
from atelier_api.keys import CONFIG_KEY

# validatorUrl: null keeps Swagger UI from sending the document to validator.swagger.io.
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Atelier ratings &amp; reviews API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="/docs/static/favicon-16x16.png" sizes="16x16">
  <style>body { margin: 0; background: #fafafa; }</style>
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
    });
  </script>
</body>
</html>
"""
# The browser may keep the files a day: they change only with the package.
ASSET_CACHE_CONTROL = "public, max-age=86400"


async def openapi_json(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    return web.Response(
        body=openapi.document_json(config.reviews_max_count, config.max_body_bytes),
        content_type="application/json",
    )


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def docs_asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["asset"]
    content_type = openapi.DOCS_ASSETS.get(name)
    if content_type is None:  # only the listed files: nothing else of the package's folder
        raise web.HTTPNotFound()
    return web.FileResponse(
        swagger_ui.static_path / name,
        headers={"Content-Type": content_type, "Cache-Control": ASSET_CACHE_CONTROL},
    )
