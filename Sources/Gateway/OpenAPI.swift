/// The OpenAPI description served at `/openapi.yaml`. Every route the gateway registers must
/// appear here (GatewayTests checks the router's route table against it).
enum OpenAPI {
    static let document = """
    openapi: 3.0.3
    info:
      title: Framecast API
      version: 0.1.0
      description: >
        Family photos from a phone to smart photo frames. JSON in and out; every route except
        sign-up, login and health needs `Authorization: Bearer <token>`. Errors are
        `{"error": {"code": "...", "message": "..."}}`. JSON bodies are at most 256 KiB (413);
        a client that does not send its request head or body in time (15 s by default) gets 408
        or its connection closed; a malformed or cut body is 400.
    servers:
      - url: http://127.0.0.1:8080
    components:
      securitySchemes:
        bearer:
          type: http
          scheme: bearer
      schemas:
        Error:
          type: object
          required: [error]
          properties:
            error:
              type: object
              required: [code, message]
              properties:
                code: {type: string}
                message: {type: string}
        Session:
          type: object
          required: [user_id, token]
          properties:
            user_id: {type: string, format: uuid}
            token: {type: string}
        File:
          type: object
          required: [file_id, file_name, content_type, size, sha256, created_at, width, height, download_url]
          properties:
            file_id: {type: string, format: uuid}
            file_name: {type: string}
            content_type: {type: string}
            size: {type: integer}
            sha256: {type: string}
            created_at: {type: string, format: date-time}
            format: {type: string}
            width: {type: integer, description: upright width}
            height: {type: integer, description: upright height}
            orientation: {type: integer}
            taken_at: {type: string, format: date-time}
            camera: {type: object, properties: {make: {type: string}, model: {type: string}}}
            gps: {type: object, properties: {latitude: {type: number}, longitude: {type: number}, altitude: {type: number}}}
            dominant_colors: {type: array, items: {type: string}}
            perceptual_hash: {type: string}
            metadata: {type: object, additionalProperties: {type: string}}
            ai_metadata:
              type: object
              properties:
                labels: {type: array, items: {type: string}}
                faces: {type: array, items: {type: object}}
                objects: {type: array, items: {type: string}}
                analyser: {type: string}
            download_url: {type: string}
            duplicate: {type: boolean}
        PlaylistInput:
          type: object
          properties:
            name: {type: string, maxLength: 200, description: required on create}
            description: {type: string, maxLength: 2000}
            album_ids: {type: array, maxItems: 50, items: {type: string, format: uuid}}
            file_ids: {type: array, maxItems: 500, items: {type: string, format: uuid}}
            order: {type: string, enum: [newest, oldest, shuffle], default: newest}
        Playlist:
          type: object
          required: [playlist_id, owner_id, name, description, order, album_ids, file_ids, created_at, updated_at]
          properties:
            playlist_id: {type: string, format: uuid}
            owner_id: {type: string}
            name: {type: string}
            description: {type: string}
            order: {type: string, enum: [newest, oldest, shuffle]}
            album_ids: {type: array, items: {type: string}}
            file_ids: {type: array, items: {type: string}, description: photos chosen one by one}
            photo_ids: {type: array, items: {type: string}, description: 'GET of one playlist: what it plays now, in order (by taken-at, upload time when unknown)'}
            created_at: {type: string, format: date-time}
            updated_at: {type: string, format: date-time}
        ScheduleEntry:
          type: object
          required: [interval_seconds]
          properties:
            playlist_id: {type: string, description: 'one of your playlists; or album_id; neither: the frame''s albums'}
            album_id: {type: string}
            days: {type: array, items: {type: string, enum: [mon, tue, wed, thu, fri, sat, sun]}, description: absent or empty for every day}
            start_time: {type: string, pattern: '^([01][0-9]|2[0-3]):[0-5][0-9]$', description: 'HH:MM; with end_time; both absent: all day; end before start: past midnight'}
            end_time: {type: string, pattern: '^([01][0-9]|2[0-3]):[0-5][0-9]$'}
            interval_seconds: {type: integer, minimum: 5, maximum: 86400}
            shuffle: {type: boolean}
        Schedule:
          type: object
          required: [frame_id, entries]
          properties:
            frame_id: {type: string}
            entries: {type: array, items: {$ref: '#/components/schemas/ScheduleEntry'}}
            updated_at: {type: string, format: date-time}
      responses:
        Error:
          description: An error
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Error'}
    security:
      - bearer: []
    paths:
      /healthz:
        get:
          summary: The process is alive
          security: []
          responses:
            '200': {description: alive}
      /readyz:
        get:
          summary: NATS and PostgreSQL are reachable
          security: []
          responses:
            '200': {description: ready}
            '503': {description: not ready}
      /metrics:
        get:
          summary: Prometheus metrics (request duration by route and status…)
          security: []
          responses:
            '200': {description: Prometheus text format}
      /openapi.yaml:
        get:
          summary: This document
          security: []
          responses:
            '200': {description: OpenAPI 3 YAML}
      /api/v1/auth/signup:
        post:
          summary: Create an account
          security: []
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  required: [email, password, name]
                  properties:
                    email: {type: string}
                    password: {type: string, minLength: 8}
                    name: {type: string}
          responses:
            '201': {description: created, content: {application/json: {schema: {$ref: '#/components/schemas/Session'}}}}
            '400': {$ref: '#/components/responses/Error'}
            '409': {$ref: '#/components/responses/Error'}
            '429': {description: 'too many sign-ups from this address; Retry-After gives the seconds to wait', content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}}
      /api/v1/auth/login:
        post:
          summary: Get a token
          security: []
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  required: [email, password]
                  properties:
                    email: {type: string}
                    password: {type: string}
          responses:
            '200': {description: logged in, content: {application/json: {schema: {$ref: '#/components/schemas/Session'}}}}
            '401': {$ref: '#/components/responses/Error'}
            '429': {description: 'too many failed logins for this account or from this address (the password is not checked); Retry-After gives the seconds to wait', content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}}
      /api/v1/auth/logout:
        post:
          summary: Revoke the token used for this request
          responses:
            '204': {description: revoked}
            '401': {$ref: '#/components/responses/Error'}
      /api/v1/storage/photos/upload:
        post:
          summary: Upload a photo
          requestBody:
            required: true
            content:
              multipart/form-data:
                schema:
                  type: object
                  required: [file]
                  properties:
                    file: {type: string, format: binary}
                    metadata: {type: string, description: 'JSON object, e.g. {"album_id": "..."}; an album_id must name an album you may add photos to (owner or contributor): else 404, or 403 for a viewer, and nothing is stored'}
          responses:
            '201': {description: stored, content: {application/json: {schema: {$ref: '#/components/schemas/File'}}}}
            '200': {description: 'the same bytes again: the existing file, duplicate true', content: {application/json: {schema: {$ref: '#/components/schemas/File'}}}}
            '400': {$ref: '#/components/responses/Error'}
            '401': {$ref: '#/components/responses/Error'}
            '403': {$ref: '#/components/responses/Error'}
            '404': {$ref: '#/components/responses/Error'}
            '408': {$ref: '#/components/responses/Error'}
            '413': {$ref: '#/components/responses/Error'}
            '415': {$ref: '#/components/responses/Error'}
            '503': {$ref: '#/components/responses/Error'}
      /api/v1/storage/files:
        get:
          summary: Your files, newest first
          parameters:
            - {name: page_size, in: query, schema: {type: integer}}
            - {name: page_token, in: query, schema: {type: string}}
          responses:
            '200':
              description: a page
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      files: {type: array, items: {$ref: '#/components/schemas/File'}}
                      next_page_token: {type: string}
            '401': {$ref: '#/components/responses/Error'}
      /api/v1/storage/files/{file_id}:
        parameters:
          - {name: file_id, in: path, required: true, schema: {type: string}}
        get:
          summary: One of your files
          responses:
            '200': {description: the file, content: {application/json: {schema: {$ref: '#/components/schemas/File'}}}}
            '404': {$ref: '#/components/responses/Error'}
        delete:
          summary: Delete one of your files
          responses:
            '204': {description: deleted}
            '404': {$ref: '#/components/responses/Error'}
      /api/v1/photos/{file_id}:
        get:
          summary: The photo's metadata for frames (versions with size, width, height, bytes, url; ai_metadata; cached_for_frames)
          description: Readable by the owner, members of an album holding the photo, and frames (frame token) subscribed to such an album; 404 for anyone else.
          parameters:
            - {name: file_id, in: path, required: true, schema: {type: string}}
          responses:
            '200': {description: the photo metadata document}
            '404': {$ref: '#/components/responses/Error'}
      /api/v1/files/download/{file_id}:
        get:
          summary: The photo's bytes (ETag, Cache-Control, Range, conditional GET)
          parameters:
            - {name: file_id, in: path, required: true, schema: {type: string}}
            - {name: size, in: query, description: 'original (the owner), thumbnail, hd or frame:{W}x{H} (rendered versions, for whoever may see the photo). A version not rendered yet is rendered on request only for thumbnail, hd and the screen of one of your frames (a frame: its own screen); another frame:{W}x{H} is served when it exists already, else 400', schema: {type: string, default: original}}
            - {name: format, in: query, description: 'webp only for frame:{W}x{H}', schema: {type: string, enum: [jpeg, webp]}}
            - {name: Range, in: header, schema: {type: string}}
            - {name: If-None-Match, in: header, schema: {type: string}}
          responses:
            '200': {description: the bytes}
            '206': {description: the requested range}
            '304': {description: not modified}
            '400': {$ref: '#/components/responses/Error'}
            '404': {$ref: '#/components/responses/Error'}
            '416': {$ref: '#/components/responses/Error'}

      /api/v1/albums:
        post:
          summary: Create an album (you are its owner)
          requestBody: {required: true, content: {application/json: {schema: {type: object, required: [name], properties: {name: {type: string}, description: {type: string}}}}}}
          responses:
            '201': {description: the album}
            '400': {$ref: '#/components/responses/Error'}
        get:
          summary: Albums you own or belong to, newest first
          parameters:
            - {name: page_size, in: query, schema: {type: integer}}
            - {name: page_token, in: query, schema: {type: string}}
          responses:
            '200': {description: 'albums, next_page_token'}
      /api/v1/albums/{album_id}:
        parameters:
          - {name: album_id, in: path, required: true, schema: {type: string}}
        get:
          summary: One album (with photo count and your role)
          responses:
            '200': {description: the album}
            '404': {$ref: '#/components/responses/Error'}
        patch:
          summary: Rename, describe, set the cover or the display settings (retained on albums/{id}/config)
          requestBody: {required: true, content: {application/json: {schema: {type: object, properties: {name: {type: string}, description: {type: string}, cover_file_id: {type: string}, settings: {type: object, properties: {interval_seconds: {type: integer}, shuffle: {type: boolean}, transition: {type: string}, show_captions: {type: boolean}}}}}}}}
          responses:
            '200': {description: the album}
            '403': {$ref: '#/components/responses/Error'}
            '404': {$ref: '#/components/responses/Error'}
        delete:
          summary: Delete an album you own
          responses:
            '204': {description: deleted}
            '404': {$ref: '#/components/responses/Error'}
      /api/v1/albums/{album_id}/members:
        parameters:
          - {name: album_id, in: path, required: true, schema: {type: string}}
        get:
          summary: The album's members
          responses:
            '200': {description: members}
        post:
          summary: Add a member by e-mail (owner, contributor or viewer); again changes the role
          requestBody: {required: true, content: {application/json: {schema: {type: object, required: [email, role], properties: {email: {type: string}, role: {type: string, enum: [owner, contributor, viewer]}}}}}}
          responses:
            '201': {description: the member}
            '403': {$ref: '#/components/responses/Error'}
            '404': {$ref: '#/components/responses/Error'}
      /api/v1/albums/{album_id}/members/{user_id}:
        parameters:
          - {name: album_id, in: path, required: true, schema: {type: string}}
          - {name: user_id, in: path, required: true, schema: {type: string}}
        delete:
          summary: Remove a member
          responses:
            '204': {description: removed}
      /api/v1/albums/{album_id}/photos:
        parameters:
          - {name: album_id, in: path, required: true, schema: {type: string}}
        get:
          summary: The album's photos, newest first
          parameters:
            - {name: page_size, in: query, schema: {type: integer}}
            - {name: page_token, in: query, schema: {type: string}}
          responses:
            '200': {description: 'photos, next_page_token'}
        post:
          summary: Add one of your photos (owner and contributors)
          requestBody: {required: true, content: {application/json: {schema: {type: object, required: [file_id], properties: {file_id: {type: string}}}}}}
          responses:
            '201': {description: the album photo}
            '403': {$ref: '#/components/responses/Error'}
            '404': {$ref: '#/components/responses/Error'}
      /api/v1/albums/{album_id}/photos/{file_id}:
        parameters:
          - {name: album_id, in: path, required: true, schema: {type: string}}
          - {name: file_id, in: path, required: true, schema: {type: string}}
        delete:
          summary: Remove a photo from the album
          responses:
            '204': {description: removed}
      /api/v1/frames:
        post:
          summary: Register a frame; answers its id, its token for HTTP and its MQTT connection details
          requestBody: {required: true, content: {application/json: {schema: {type: object, required: [name, width, height], properties: {name: {type: string}, width: {type: integer}, height: {type: integer}, orientation: {type: string, enum: [landscape, portrait]}}}}}}
          responses:
            '201': {description: 'frame_id, frame_token, mqtt {host, port, username, password}, frame'}
            '400': {$ref: '#/components/responses/Error'}
        get:
          summary: Your frames
          responses:
            '200': {description: frames}
      /api/v1/frames/{frame_id}:
        parameters:
          - {name: frame_id, in: path, required: true, schema: {type: string}}
        get:
          summary: A frame (online, last heartbeat, sync status per album); a frame token may read its own
          responses:
            '200': {description: the frame}
            '404': {$ref: '#/components/responses/Error'}
        patch:
          summary: Rename or resize a frame
          requestBody: {required: true, content: {application/json: {schema: {type: object, properties: {name: {type: string}, width: {type: integer}, height: {type: integer}, orientation: {type: string}}}}}}
          responses:
            '200': {description: the frame}
        delete:
          summary: Delete a frame (its token and MQTT identity stop working; the broker drops its connection, its retained topics are cleared)
          responses:
            '204': {description: deleted}
      /api/v1/frames/{frame_id}/credentials:
        parameters:
          - {name: frame_id, in: path, required: true, schema: {type: string}}
        post:
          summary: New credentials (MQTT password and frame token); the old ones stop working at once
          responses:
            '200': {description: 'frame_id, frame_token, mqtt {host, port, username, password}, frame (as at registration)'}
            '404': {$ref: '#/components/responses/Error'}
            '503': {$ref: '#/components/responses/Error'}
      /api/v1/frames/{frame_id}/albums:
        parameters:
          - {name: frame_id, in: path, required: true, schema: {type: string}}
        put:
          summary: The albums the frame shows (albums you can see); publishes its sync
          requestBody: {required: true, content: {application/json: {schema: {type: object, required: [album_ids], properties: {album_ids: {type: array, items: {type: string}}}}}}}
          responses:
            '200': {description: the frame}
            '404': {$ref: '#/components/responses/Error'}
      /api/v1/frames/{frame_id}/sync:
        parameters:
          - {name: frame_id, in: path, required: true, schema: {type: string}}
        post:
          summary: Publish the frame's full sync now
          responses:
            '200': {description: 'sequence, photo_count'}
      /api/v1/frames/{frame_id}/commands:
        parameters:
          - {name: frame_id, in: path, required: true, schema: {type: string}}
        post:
          summary: Send a command (next, previous, pause, resume, reload, sleep, wake, set_interval)
          requestBody: {required: true, content: {application/json: {schema: {type: object, required: [command], properties: {command: {type: string}, args: {type: object, additionalProperties: {type: string}}}}}}}
          responses:
            '202': {description: command_id}
            '400': {$ref: '#/components/responses/Error'}
      /api/v1/frames/{frame_id}/config:
        parameters:
          - {name: frame_id, in: path, required: true, schema: {type: string}}
        put:
          summary: The frame's settings, retained on frames/{id}/config
          requestBody: {required: true, content: {application/json: {schema: {type: object, properties: {interval_seconds: {type: integer}, shuffle: {type: boolean}, sleep_start: {type: string}, sleep_end: {type: string}, time_zone: {type: string, description: 'IANA name, e.g. Europe/Paris; empty: the frame''s local time'}, transition: {type: string}, preferred_format: {type: string}, brightness: {type: integer}}}}}}
          responses:
            '200': {description: the frame}
      /api/v1/frames/{frame_id}/schedule:
        parameters:
          - {name: frame_id, in: path, required: true, schema: {type: string}}
        get:
          summary: The frame's rotation schedule (entries empty when it has none); the frame's owner only
          responses:
            '200': {description: the schedule, content: {application/json: {schema: {$ref: '#/components/schemas/Schedule'}}}}
            '404': {$ref: '#/components/responses/Error'}
        put:
          summary: Replace the frame's rotation schedule; the frame receives it in its retained frames/{id}/config
          requestBody: {required: true, content: {application/json: {schema: {type: object, required: [entries], properties: {entries: {type: array, minItems: 1, maxItems: 24, items: {$ref: '#/components/schemas/ScheduleEntry'}}}}}}}
          responses:
            '200': {description: the schedule, content: {application/json: {schema: {$ref: '#/components/schemas/Schedule'}}}}
            '400': {$ref: '#/components/responses/Error'}
            '404': {$ref: '#/components/responses/Error'}
        delete:
          summary: Remove the frame's rotation schedule (its retained config loses it)
          responses:
            '204': {description: deleted}
            '404': {$ref: '#/components/responses/Error'}
      /api/v1/playlists:
        post:
          summary: Create a playlist of albums you can see and photos you can see, in an order
          requestBody: {required: true, content: {application/json: {schema: {$ref: '#/components/schemas/PlaylistInput'}}}}
          responses:
            '201': {description: the playlist, content: {application/json: {schema: {$ref: '#/components/schemas/Playlist'}}}}
            '400': {$ref: '#/components/responses/Error'}
            '404': {$ref: '#/components/responses/Error'}
        get:
          summary: Your playlists, newest first
          parameters:
            - {name: page_size, in: query, schema: {type: integer}}
            - {name: page_token, in: query, schema: {type: string}}
          responses:
            '200': {description: 'playlists, next_page_token'}
      /api/v1/playlists/{playlist_id}:
        parameters:
          - {name: playlist_id, in: path, required: true, schema: {type: string}}
        get:
          summary: One of your playlists with photo_ids, the photos it plays now in its order (at most 1000)
          responses:
            '200': {description: the playlist, content: {application/json: {schema: {$ref: '#/components/schemas/Playlist'}}}}
            '404': {$ref: '#/components/responses/Error'}
        patch:
          summary: Rename, describe, reorder, or replace its albums or photos (fields absent stay)
          requestBody: {required: true, content: {application/json: {schema: {$ref: '#/components/schemas/PlaylistInput'}}}}
          responses:
            '200': {description: the playlist, content: {application/json: {schema: {$ref: '#/components/schemas/Playlist'}}}}
            '400': {$ref: '#/components/responses/Error'}
            '404': {$ref: '#/components/responses/Error'}
        delete:
          summary: Delete a playlist (409 while a frame's schedule plays it)
          responses:
            '204': {description: deleted}
            '404': {$ref: '#/components/responses/Error'}
            '409': {$ref: '#/components/responses/Error'}

    """
}
