-- bench/post.lua - wrk script: send every request as a POST with an empty body
-- (the job endpoints, POST /v1/jobs/<kind>, take their parameters from the query string).
wrk.method = "POST"
