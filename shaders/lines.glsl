#version 330 core
// Flat-coloured lines (wireframe) and points (landmarks), pulled slightly towards the viewer so they
// win the depth test against the surface they lie on but stay hidden behind nearer geometry.

#if defined VERTEX_SHADER

in vec3 in_position;  // image pixels

uniform mat4 u_mvp;
uniform float u_depth_offset;  // clip-space z shift (times w) towards the viewer
uniform float u_point_size;

void main() {
    vec4 p = u_mvp * vec4(in_position, 1.0);
    p.z -= u_depth_offset * p.w;
    gl_Position = p;
    gl_PointSize = u_point_size;
}

#elif defined FRAGMENT_SHADER

uniform vec4 u_color;
uniform bool u_round;  // round points (discard the corners of the point sprite)

out vec4 f_color;

void main() {
    if (u_round && length(gl_PointCoord - vec2(0.5)) > 0.5) discard;
    f_color = u_color;
}

#endif
