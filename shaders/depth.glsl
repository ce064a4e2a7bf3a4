#version 330 core
// Depth map of the face in its own camera view (orthographic, image pixels), for the baker's
// occlusion test. Rows are not flipped: texture row 0 is image row 0.

#if defined VERTEX_SHADER

in vec3 in_position;  // image pixels

uniform vec2 u_frame_size;   // image width, height
uniform vec2 u_depth_range;  // z0, 1 / (z1 - z0): maps the face's z to [0, 1]

void main() {
    vec2 ndc = (in_position.xy + 0.5) / u_frame_size * 2.0 - 1.0;
    float depth = (in_position.z - u_depth_range.x) * u_depth_range.y;
    gl_Position = vec4(ndc, depth * 2.0 - 1.0, 1.0);
}

#elif defined FRAGMENT_SHADER

void main() {
}

#endif
