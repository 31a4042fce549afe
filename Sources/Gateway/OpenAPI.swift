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
        `{"error": {"code": "...", "message": "..."}}`.
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
                    metadata: {type: string, description: 'JSON object, e.g. {"album_id": "..."}'}
          responses:
            '201': {description: stored, content: {application/json: {schema: {$ref: '#/components/schemas/File'}}}}
            '200': {description: 'the same bytes again: the existing file, duplicate true', content: {application/json: {schema: {$ref: '#/components/schemas/File'}}}}
            '400': {$ref: '#/components/responses/Error'}
            '401': {$ref: '#/components/responses/Error'}
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
      /api/v1/files/download/{file_id}:
        get:
          summary: The photo's bytes (ETag, Cache-Control, Range, conditional GET)
          parameters:
            - {name: file_id, in: path, required: true, schema: {type: string}}
            - {name: size, in: query, schema: {type: string, enum: [original]}}
            - {name: Range, in: header, schema: {type: string}}
            - {name: If-None-Match, in: header, schema: {type: string}}
          responses:
            '200': {description: the bytes}
            '206': {description: the requested range}
            '304': {description: not modified}
            '404': {$ref: '#/components/responses/Error'}
            '416': {$ref: '#/components/responses/Error'}

    """
}
